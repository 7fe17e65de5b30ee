"""The retry policy shared by tasks that touch models, disks or remote GPUs."""

from prefect.tasks import exponential_backoff

RETRIES = 3
RETRY_DELAYS = exponential_backoff(backoff_factor=2)  # 2 s, 4 s, 8 s
RETRY_JITTER = 0.5  # each delay varies by up to +-50 %
