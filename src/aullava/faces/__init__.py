"""From files to aligned face crops: image and video reading, face detection and alignment, the crop cache."""
