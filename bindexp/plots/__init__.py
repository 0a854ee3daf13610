"""Every figure bindexp draws. Figures are `matplotlib.figure.Figure` objects made without pyplot,
so plotting never switches or needs a backend (a notebook's stays as it is) and no figure is left
open; runners write them through `bindexp.io`.

- `heatmap`: a grid's layers x columns heatmap (`Grid.plot`)
- `accuracy`: accuracy against hops or seq_len (eval runs, `Experiment`, compare), and its table
- `training`: a training run's curves and phases, the mechanism over training
- `analyses`: attention head panels, the logit-lens curve, locate's IIA panels, DAS's loss
"""
