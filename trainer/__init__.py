"""The model side: frozen MLX bases, multi-tap skip adapters, training, evaluation and activation dumps.

This is the only package that imports MLX.
"""
