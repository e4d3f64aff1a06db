"""Entry point: `python run.py model=xlmr task=wikiann asg.m=8` (Hydra overrides; add -m for sweeps)."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from asg.train import train

    metrics = train(cfg)
    # The averaged test score, so Hydra sweepers that optimise a return value can use it.
    return metrics["scores"].get(f"test/avg/{cfg.task.metric}")


if __name__ == "__main__":
    main()
