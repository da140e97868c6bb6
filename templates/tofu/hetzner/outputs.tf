output "instance_ip" {
  description = "The public IPv4 address of the server."
  value       = hcloud_server.torrust.ipv4_address
}

output "instance_dir" {
  description = "The directory the tracker is deployed in, on the instance."
  value       = "/opt/torrust"
}

output "instance_name" {
  description = "The name of the server in Hetzner Cloud."
  value       = hcloud_server.torrust.name
}
