"""How AWS is reached: the boto3 clients resource and the contract's settings resource."""

from resources.aws import AwsClients, add_client_observer, load_aws_clients
from resources.settings import FleetSettings, SettingsError, deployment_resources, load_settings

__all__ = ["AwsClients", "FleetSettings", "SettingsError", "add_client_observer", "deployment_resources", "load_aws_clients", "load_settings"]
