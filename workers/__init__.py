"""Running a job: the container runtime interface and its implementations."""
