"""The MediaPipe-blendshape teacher that labels real photos, and its monotone calibration on synthetic warps."""
