"""DynamoDB repositories: the only code that reads and writes the pynamodb tables.

They turn failed conditions into domain/conflict errors and hand dataclasses to the rest of the app.
"""
