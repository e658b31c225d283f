"""Every DynamoDB access of the kit, one table, one style."""
