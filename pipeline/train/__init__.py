"""Training of the default detectors (needs the ``train`` extra: PyTorch).

Nothing at run time imports this package.
"""
