"""Acting with a learned model: CEM, goal-reaching episodes, planning controllers and policies trained through the model."""
