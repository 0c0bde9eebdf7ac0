"""Shim so `--setup_file ./setup.py` ships the project to Dataflow/Flink workers (metadata in pyproject.toml)."""
import setuptools

setuptools.setup()
