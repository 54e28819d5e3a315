"""pqflow: pruned and quantized networks to verified, costed FPGA accelerators.

``pqflow.lower`` (``pqflow.models.lower.lower``) is imported on first use, so
``import pqflow`` stays free of torch.
"""

__all__ = ["lower"]


def __getattr__(name: str):
    if name == "lower":
        from pqflow.models.lower import lower

        return lower
    raise AttributeError(f"module 'pqflow' has no attribute {name!r}")
