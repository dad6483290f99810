"""Runs the Python test suites and prints "integration: N passed, N failed,
N skipped" last. Suites: the folders named on the command line (default:
tests/integration and tests/gpu), every test_*.py in each."""
import os
import sys
import unittest

here = os.path.dirname(os.path.abspath(__file__))
top = os.path.dirname(os.path.dirname(here))
sys.path.insert(0, here)
folders = sys.argv[1:] or [here, os.path.join(top, "tests", "gpu")]
suite = unittest.TestSuite()
for folder in folders:
    suite.addTests(unittest.defaultTestLoader.discover(folder, pattern="test_*.py", top_level_dir=folder))
result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
bad = len(result.failures) + len(result.errors)
skipped = len(result.skipped)
for reason in sorted({why for _, why in result.skipped}):
    print(reason)
print("integration: %d passed, %d failed, %d skipped" % (result.testsRun - bad - skipped, bad, skipped))
sys.exit(1 if bad else 0)
