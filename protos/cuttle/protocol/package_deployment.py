"""What an agent is asked to do with a cached package before a ticket's script: one type for
the server that asks and the Tentacle that does it, and its wire form (tentacle.proto's
PackageDeployment)."""

from __future__ import annotations

from dataclasses import dataclass

from cuttle.protocol.v1 import tentacle_pb2 as pb


@dataclass(frozen=True, slots=True)
class PackageDeployment:
    """A cached package to put in place before the script runs (field meanings: the proto)."""

    sha256: str
    package_id: str
    version: str
    format: str
    environment: str = ""
    tenant: str = ""
    # A script from a package: extracted into the workspace, this file runs.
    script_file: str = ""
    custom_installation_directory: str = ""
    purge_custom_installation_directory: bool = False
    purge_exclusions: tuple[str, ...] = ()
    substitute_target_files: tuple[str, ...] = ()
    structured_variable_files: tuple[str, ...] = ()
    run_package_scripts: bool = False

    def to_proto(self) -> pb.PackageDeployment:
        """The wire form."""
        return pb.PackageDeployment(
            sha256=self.sha256,
            package_id=self.package_id,
            version=self.version,
            format=self.format,
            environment=self.environment,
            tenant=self.tenant,
            script_file=self.script_file,
            custom_installation_directory=self.custom_installation_directory,
            purge_custom_installation_directory=self.purge_custom_installation_directory,
            purge_exclusions=list(self.purge_exclusions),
            substitute_target_files=list(self.substitute_target_files),
            structured_variable_files=list(self.structured_variable_files),
            run_package_scripts=self.run_package_scripts,
        )

    @classmethod
    def from_proto(cls, message: pb.PackageDeployment) -> PackageDeployment:
        """From the wire form, as it came (the receiver checks the values)."""
        return cls(
            sha256=message.sha256,
            package_id=message.package_id,
            version=message.version,
            format=message.format,
            environment=message.environment,
            tenant=message.tenant,
            script_file=message.script_file,
            custom_installation_directory=message.custom_installation_directory,
            purge_custom_installation_directory=message.purge_custom_installation_directory,
            purge_exclusions=tuple(message.purge_exclusions),
            substitute_target_files=tuple(message.substitute_target_files),
            structured_variable_files=tuple(message.structured_variable_files),
            run_package_scripts=message.run_package_scripts,
        )
