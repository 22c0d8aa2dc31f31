"""Renderers: turn reports into terminal tables or JSON documents; no scanning or reasoning."""
