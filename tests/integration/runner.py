"""Runs every integration test (tests/integration/test_*.py) and prints
"integration: N passed, N failed" last."""
import os
import sys
import unittest

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
suite = unittest.defaultTestLoader.discover(here, pattern="test_*.py")
result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
bad = len(result.failures) + len(result.errors)
print("integration: %d passed, %d failed" % (result.testsRun - bad, bad))
sys.exit(1 if bad else 0)
