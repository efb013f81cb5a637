"""PR reviews: findings stored on completion (the webhook-fed review jobs come later)."""
