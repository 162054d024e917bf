"""Scheduled jobs and Lightning systems built on the graphrec library."""
