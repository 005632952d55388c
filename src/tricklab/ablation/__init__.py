"""Ablation: `tricklab compare` grids of variants x seeds, the leaderboard and its statistics (paired t, bootstrap,
McNemar). May import: training, evaluation, data, and the ground floor (it runs training, never the reverse)."""
