"""parc-surgery: convert timm vision models to ParC / Fast-ParC networks."""

__version__ = "0.1.0"
