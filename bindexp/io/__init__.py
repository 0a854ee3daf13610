"""The one owner of disk: every file name (`folder.RunFolder`) and every format bindexp writes or
reads -- grids, tensor bundles, tables and figures, JSON Lines streams, checkpoints and their index.
Interventions and training return objects; runners write them through this package."""
