"""AU-controlled synthetic faces with exact labels: the AU→mesh model, the mesh warp, sampling, the dataset run."""
