"""bindexp: do language models track the values of variables in code, and where?"""

__version__ = "0.1.0"
