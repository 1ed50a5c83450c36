"""Run plumbing shared by every command: errors, run directories and atomic writes, consoles and progress, process and Ray pools. Imports nothing else of visfore."""
