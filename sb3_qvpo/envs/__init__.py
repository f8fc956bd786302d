from sb3_qvpo.envs.continuous_bandit import PAPER_PEAK_CENTERS, MultiPeakBanditEnv, multi_peak_reward

__all__ = ["PAPER_PEAK_CENTERS", "MultiPeakBanditEnv", "multi_peak_reward"]
