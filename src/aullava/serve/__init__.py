"""A local web server over the predictor: an HTTP API (`POST /predict`, `GET /health`) and a page that shows a photo
with its face boxes and per-AU bars. Started by `aullava serve`."""
