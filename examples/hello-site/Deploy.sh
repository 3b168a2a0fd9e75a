# Runs on each machine after the package is extracted and site.conf is filled in (Octopus's
# Deploy.sh convention), in the package's own folder, with the deployment's variables.
echo "site $(get_octopusvariable Octopus.Action.Package.PackageVersion) installed on $(get_octopusvariable Octopus.Machine.Name) in $PWD"
cat site.conf
