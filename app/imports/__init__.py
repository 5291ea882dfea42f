"""Importing prompts, answers, demonstrations and preferences from JSONL or CSV files (design §8)."""
