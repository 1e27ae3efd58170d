"""The only package that imports torch and timm."""
