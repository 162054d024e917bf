"""graphrec's daily job as an Airflow DAG: one task running the same command as the crontab and the CronJob.

`{{ ds }}` is the run's logical date, so a backfill or a cleared task reruns that date (a finished date changes
nothing). Exit 75 (busy: another run holds the workdir or the store) is retried; 3 (gated: the candidate pair
was not published, the live pair stays) fails the task so someone reads the run's report.html; 2 (bad input) and
1 (failure) fail it too. `max_active_runs=1` keeps Airflow from starting overlapping runs in the first place.
"""

from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

GRAPHREC = "/opt/graphrec"  # the checkout, with its .venv installed by `make install`

with DAG(
    dag_id="graphrec_daily",
    schedule="15 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 3, "retry_delay": timedelta(minutes=20)},
    tags=["graphrec"],
) as dag:
    BashOperator(
        task_id="run",
        bash_command=(
            f"cd {GRAPHREC} && .venv/bin/graphrec run --config conf/default.yaml --run_date {{{{ ds }}}} "
            "--log-format json"
        ),
        execution_timeout=timedelta(hours=2),
    )
