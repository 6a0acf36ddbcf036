"""Test helpers and task modules shared by the unit, integration and system tests."""
