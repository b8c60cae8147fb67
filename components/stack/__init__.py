"""The local stack: Prefect server, worker, serving and Evidently UI as supervised processes."""
