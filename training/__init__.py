"""Scheduled jobs and Lightning systems built on the graphrec library."""

import os

# Polars allocates with jemalloc, whose default here keeps freed pages resident: between the stages of a job, and
# between the million-row parts of the ranker's features, the process held gigabytes it no longer used. Its background
# thread hands them back a second after they are freed: on a 10M-event shop the ranker rows peak 7.3 GB instead of
# 7.8, in the same time. Read once, when polars first allocates, so set before any job imports it; a value the
# environment already holds wins.
os.environ.setdefault("_RJEM_MALLOC_CONF", "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0")
