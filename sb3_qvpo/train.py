"""
``python -m sb3_qvpo.train --algo qvpo --env Hopper-v5 [rl-zoo3 train flags]``: rl-zoo3's ``train``
with QVPO registered next to the zoo's own algorithms (``--algo sac`` works too).
"""

from sb3_qvpo.zoo.cli import train

if __name__ == "__main__":
    train()
