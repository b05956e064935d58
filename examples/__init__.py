"""Example apps from the documentation (exercised by ``tests/test_examples.py``)."""
