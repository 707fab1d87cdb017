"""Tests of gtserver, run with trial: python -m twisted.trial tests"""
