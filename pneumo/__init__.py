"""pneumo: a research demo that reads a pediatric chest X-ray and estimates the probability of pneumonia.

Not a medical device. See README.md.
"""

__version__ = "0.1.0"
