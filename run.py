"""Entry point: `python run.py model=xlmr task=wikiann asg.m=8` (Hydra overrides; add -m for sweeps)."""

import hydra
from omegaconf import DictConfig

import asg  # noqa: F401  (registers the config resolvers before Hydra composes)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from asg.sweep import run_job
    from asg.train import train

    # In a sweep a failed job is recorded in its run dir and the others go on; a single run fails loudly.
    metrics = run_job(train, cfg)
    if metrics is None:
        return None
    # The averaged test score, so Hydra sweepers that optimise a return value can use it.
    return metrics["scores"].get(f"test/avg/{cfg.task.metric}")


if __name__ == "__main__":
    main()
