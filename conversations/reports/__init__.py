"""What the bot and the team achieve, per day or week and per model version: /reports/."""
