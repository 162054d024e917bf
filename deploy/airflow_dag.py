"""graphrec's daily job as an Airflow DAG: one task running the same command as the crontab and the CronJob.

The task's logical date is the run date, so a backfill or a cleared task reruns that date (a finished date changes
nothing). Exit codes: 75 (busy: another run holds the workdir or the store) and 1 (failure) are retried; 2 (bad
input) and 3 (gated: the candidate pair was not published, the live pair stays) fail the task at once, without
retries, so someone reads the run's report.html; 0 succeeds. `max_active_runs=1` keeps Airflow from starting
overlapping runs in the first place.
"""

import subprocess
from datetime import datetime, timedelta

from airflow import DAG
from airflow.exceptions import AirflowException, AirflowFailException
from airflow.operators.python import PythonOperator

GRAPHREC = "/opt/graphrec"  # the checkout, with its .venv installed by `make install`
COMMAND = [".venv/bin/graphrec", "run", "--config", "conf/default.yaml", "--run_date", "{ds}", "--log-format", "json"]
NO_RETRY = {2: "bad input", 3: "gated: the candidate pair was not published"}


def run_graphrec(ds: str) -> None:
    """Run the job for the logical date `ds`; its log goes to the task log."""
    code = subprocess.run([part.format(ds=ds) for part in COMMAND], cwd=GRAPHREC).returncode
    if code in NO_RETRY:
        raise AirflowFailException(f"graphrec run exited {code} ({NO_RETRY[code]}); see runs/{ds}/report.html")
    if code != 0:
        raise AirflowException(f"graphrec run exited {code} (75: busy, retried; 1: failure)")


with DAG(
    dag_id="graphrec_daily",
    schedule="15 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 3, "retry_delay": timedelta(minutes=20)},
    tags=["graphrec"],
) as dag:
    PythonOperator(task_id="run", python_callable=run_graphrec, execution_timeout=timedelta(hours=2))
