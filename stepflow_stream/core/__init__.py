"""The pure core: flow model, expressions, events, the reducer and the scheduler.

Nothing in this package does I/O, reads a clock or draws a random number: every function
takes values and returns values, so runs are deterministic and replayable.
"""
