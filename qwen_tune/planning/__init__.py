"""From recipe, model, data and devices to a Plan: pure, except jobs.py, the edge that reads files and the box."""
