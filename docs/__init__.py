"""Documentation sources; ``docs.examples`` holds example apps run by the tests."""
