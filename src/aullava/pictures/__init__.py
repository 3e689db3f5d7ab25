"""Pictures of results: overlays on images and videos, plots of AU values."""
