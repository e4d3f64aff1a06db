"""Baselines ASG is compared with at equal budgets, registered as `asg.method=...`."""
