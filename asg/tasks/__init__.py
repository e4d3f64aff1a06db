"""One LightningModule per task family, built from the small shared helpers in `asg.tasks.common`."""
