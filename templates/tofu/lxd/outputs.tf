output "instance_ip" {
  description = "The IPv4 address of the virtual machine."
  value       = lxd_instance.torrust.ipv4_address
}

output "instance_dir" {
  description = "The directory the tracker is deployed in, on the instance."
  value       = "/opt/torrust"
}

output "instance_name" {
  description = "The LXD name of the virtual machine (`lxc exec NAME -- bash`)."
  value       = lxd_instance.torrust.name
}
