"""Runs inside every training pod and in local mode: pre-flight, `swift sft`, supervision, progress, merge."""
