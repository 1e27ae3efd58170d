"""Pure-Python ViT arithmetic: specs, token layouts and analytic costs. No torch, numpy or PIL."""
