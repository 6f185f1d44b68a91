"""Deployment: the CloudFormation merge template and the build that packages the Lambda functions."""
