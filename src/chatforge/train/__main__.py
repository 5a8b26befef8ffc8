"""``python -m chatforge.train STAGE ...``: the training commands without the rest of the CLI.

This is the module to hand to torchrun, e.g. ``torchrun --nproc_per_node=2 -m chatforge.train sft --base ...``.
"""

from __future__ import annotations

import argparse
import sys

from chatforge.train import dpo, ppo, reward, sft


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chatforge.train", description="chatforge training stages"
    )
    stages = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for stage in (sft, reward, ppo, dpo):
        stage.register_cli(stages)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
