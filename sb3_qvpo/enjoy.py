"""
``python -m sb3_qvpo.enjoy --algo qvpo --env Hopper-v5 -f logs/ [rl-zoo3 enjoy flags]``: load a
trained agent with rl-zoo3's ``enjoy`` and run it. Videos: ``python -m sb3_qvpo.zoo record_video``.
"""

from sb3_qvpo.zoo.cli import enjoy

if __name__ == "__main__":
    enjoy()
