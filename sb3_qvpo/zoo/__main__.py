"""``python -m sb3_qvpo.zoo train|enjoy|record_video [rl-zoo3 flags]``."""

from sb3_qvpo.zoo.cli import main

if __name__ == "__main__":
    main()
