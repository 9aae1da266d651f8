"""Helpers of the tracking tests: --import-mode=importlib leaves sys.path alone, so the tests import
tiny_exports.py by name from this folder."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
