"""torchvision's built-in classification datasets by name, read from local files, never downloaded."""
